#include "dualpipe/runtime/distributed_env.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

namespace dualpipe::runtime {
namespace {

// Expects detect_distributed_env(env) to throw std::invalid_argument mentioning every fragment.
void expect_error(const EnvMap& env, const std::vector<std::string>& fragments) {
  try {
    detect_distributed_env(env);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    for (const std::string& fragment : fragments) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos)
          << "missing \"" << fragment << "\" in: " << e.what();
    }
  }
}

TEST(DistributedEnvTest, NoLauncherIsASingleProcessWorld) {
  const DistributedEnv env = detect_distributed_env({{"HOME", "/root"}});
  EXPECT_EQ(env.rank, 0);
  EXPECT_EQ(env.world_size, 1);
  EXPECT_EQ(env.local_rank, 0);
  EXPECT_EQ(env.local_world_size, 1);
  EXPECT_EQ(env.launcher, "single");
  EXPECT_FALSE(env.timeout.has_value());
}

TEST(DistributedEnvTest, DualpipeLaunch) {
  const DistributedEnv env = detect_distributed_env({{"RANK", "2"},
                                                     {"WORLD_SIZE", "3"},
                                                     {"LOCAL_RANK", "2"},
                                                     {"LOCAL_WORLD_SIZE", "3"},
                                                     {"MASTER_ADDR", "127.0.0.1"},
                                                     {"MASTER_PORT", "29511"},
                                                     {"DUALPIPE_LAUNCHED", "1"},
                                                     {"DUALPIPE_TIMEOUT", "2.5"}});
  EXPECT_EQ(env.launcher, "dualpipe launch");
  EXPECT_EQ(env.rank, 2);
  EXPECT_EQ(env.world_size, 3);
  EXPECT_EQ(env.local_rank, 2);
  EXPECT_EQ(env.master_addr, "127.0.0.1");
  EXPECT_EQ(env.master_port, 29511);
  ASSERT_TRUE(env.timeout.has_value());
  EXPECT_EQ(env.timeout->count(), 2500);
}

TEST(DistributedEnvTest, Torchrun) {
  const DistributedEnv env = detect_distributed_env({{"RANK", "5"},
                                                     {"WORLD_SIZE", "8"},
                                                     {"LOCAL_RANK", "1"},
                                                     {"LOCAL_WORLD_SIZE", "4"},
                                                     {"MASTER_ADDR", "node7"},
                                                     {"MASTER_PORT", "1234"},
                                                     {"TORCHELASTIC_RUN_ID", "abc"}});
  EXPECT_EQ(env.launcher, "torchrun");
  EXPECT_EQ(env.rank, 5);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_world_size, 4);
  EXPECT_EQ(env.master_addr, "node7");
  EXPECT_EQ(env.master_port, 1234);
  EXPECT_FALSE(env.use_agent_store);
}

// torchrun's agent serves the store on MASTER_PORT: every rank, rank 0 too, is a client, under a
// prefix of the restart attempt.
TEST(DistributedEnvTest, TorchrunAgentStore) {
  const EnvMap base = {{"RANK", "0"},
                       {"WORLD_SIZE", "4"},
                       {"MASTER_ADDR", "127.0.0.1"},
                       {"MASTER_PORT", "29500"},
                       {"TORCHELASTIC_RUN_ID", "none"}};
  EnvMap env = base;
  env["TORCHELASTIC_USE_AGENT_STORE"] = "True";
  env["TORCHELASTIC_RESTART_COUNT"] = "2";
  const DistributedEnv agent = detect_distributed_env(env);
  EXPECT_TRUE(agent.use_agent_store);
  EXPECT_EQ(agent.store_prefix, "dualpipe/attempt_2");
  env["TORCHELASTIC_USE_AGENT_STORE"] = "False";
  EXPECT_FALSE(detect_distributed_env(env).use_agent_store);
}

TEST(DistributedEnvTest, TorchrunStyleErrors) {
  expect_error({{"RANK", "3"}, {"WORLD_SIZE", "3"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}},
               {"RANK=3", "WORLD_SIZE=3"});
  expect_error({{"RANK", "one"}, {"WORLD_SIZE", "3"}}, {"RANK", "\"one\""});
  expect_error({{"RANK", "0"}}, {"WORLD_SIZE"});
  expect_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}}, {"MASTER_ADDR", "MASTER_PORT"});
  expect_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}},
               {"MASTER_PORT=70000"});
  expect_error({{"RANK", "0"}, {"WORLD_SIZE", "0"}}, {"WORLD_SIZE=0"});
  expect_error({{"RANK", "0"},
                {"WORLD_SIZE", "2"},
                {"LOCAL_RANK", "2"},
                {"LOCAL_WORLD_SIZE", "2"},
                {"MASTER_ADDR", "h"},
                {"MASTER_PORT", "1"}},
               {"LOCAL_RANK=2", "LOCAL_WORLD_SIZE=2"});
  expect_error({{"DUALPIPE_TIMEOUT", "-1"}}, {"DUALPIPE_TIMEOUT=\"-1\""});
}

TEST(DistributedEnvTest, OpenMpi) {
  const DistributedEnv env = detect_distributed_env({{"OMPI_COMM_WORLD_RANK", "3"},
                                                     {"OMPI_COMM_WORLD_SIZE", "4"},
                                                     {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                                     {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
                                                     {"MASTER_ADDR", "10.0.0.1"},
                                                     {"MASTER_PORT", "29500"}});
  EXPECT_EQ(env.launcher, "mpirun");
  EXPECT_EQ(env.rank, 3);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_world_size, 2);
  EXPECT_EQ(env.master_addr, "10.0.0.1");
  EXPECT_EQ(env.master_port, 29500);
}

TEST(DistributedEnvTest, OpenMpiNeedsMasterAddress) {
  expect_error({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "2"}},
               {"mpirun", "MASTER_ADDR", "MASTER_PORT", "-x"});
  expect_error({{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "2"}},
               {"OMPI_COMM_WORLD_RANK=2", "OMPI_COMM_WORLD_SIZE=2"});
}

TEST(DistributedEnvTest, SlurmWithNodeList) {
  const DistributedEnv env = detect_distributed_env({{"SLURM_PROCID", "5"},
                                                     {"SLURM_NTASKS", "6"},
                                                     {"SLURM_LOCALID", "1"},
                                                     {"SLURM_NODEID", "2"},
                                                     {"SLURM_STEP_TASKS_PER_NODE", "2(x3)"},
                                                     {"SLURM_STEP_NODELIST", "gpu[07-09]"},
                                                     {"SLURM_JOB_ID", "123456"}});
  EXPECT_EQ(env.launcher, "srun");
  EXPECT_EQ(env.rank, 5);
  EXPECT_EQ(env.world_size, 6);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_world_size, 2);
  EXPECT_EQ(env.master_addr, "gpu07");
  EXPECT_EQ(env.master_port, 10000 + 123456 % 20000);
}

TEST(DistributedEnvTest, SlurmPrefersMasterVariables) {
  const DistributedEnv env = detect_distributed_env({{"SLURM_PROCID", "0"},
                                                     {"SLURM_NTASKS", "3"},
                                                     {"SLURM_LOCALID", "0"},
                                                     {"SLURM_TASKS_PER_NODE", "1,2"},
                                                     {"SLURM_JOB_NODELIST", "a,b"},
                                                     {"MASTER_ADDR", "head"},
                                                     {"MASTER_PORT", "4000"}});
  EXPECT_EQ(env.master_addr, "head");
  EXPECT_EQ(env.master_port, 4000);
  EXPECT_EQ(env.local_world_size, 1);
}

TEST(DistributedEnvTest, SlurmErrors) {
  expect_error({{"SLURM_PROCID", "4"}, {"SLURM_NTASKS", "4"}},
               {"SLURM_PROCID=4", "SLURM_NTASKS=4"});
  expect_error({{"SLURM_PROCID", "0"},
                {"SLURM_NTASKS", "2"},
                {"SLURM_JOB_ID", "1"},
                {"SLURM_JOB_NODELIST", "rack[1-2]-node[3-4]"}},
               {"SLURM_JOB_NODELIST=rack[1-2]-node[3-4]", "MASTER_ADDR"});
  expect_error({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_JOB_NODELIST", "n1"}},
               {"MASTER_PORT"});
}

TEST(DistributedEnvTest, FirstSlurmHost) {
  EXPECT_EQ(first_slurm_host("node01"), "node01");
  EXPECT_EQ(first_slurm_host("node01,node02"), "node01");
  EXPECT_EQ(first_slurm_host("node[003-010,020]"), "node003");
  EXPECT_EQ(first_slurm_host("gpu[5,7]-ib,cpu1"), "gpu5-ib");
  EXPECT_THROW(first_slurm_host("a[1-2]b[3-4]"), std::invalid_argument);
  EXPECT_THROW(first_slurm_host("a[x-y]"), std::invalid_argument);
  EXPECT_THROW(first_slurm_host(""), std::invalid_argument);
}

TEST(DistributedEnvTest, Loopback) {
  EXPECT_TRUE(is_loopback_address("127.0.0.1"));
  EXPECT_TRUE(is_loopback_address("localhost"));
  EXPECT_FALSE(is_loopback_address("10.1.2.3"));
}

}  // namespace
}  // namespace dualpipe::runtime
