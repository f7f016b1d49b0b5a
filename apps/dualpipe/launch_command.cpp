// `dualpipe launch [--nnodes N --node-rank K --master-addr A] -n M [--master-port P]
// [--timeout S] -- PROGRAM ARGS...`: start this node's M ranks of an N x M job, with torchrun's
// flags and environment.
#include <string>
#include <vector>

#include "command.h"
#include "dualpipe/runtime/launcher.h"

namespace dualpipe::cli {
namespace {

// torchrun's default MASTER_PORT; a one-node job without --master-port picks a free port.
constexpr int kDefaultMultiNodePort = 29500;

}  // namespace

Command add_launch_command(CLI::App& app) {
  CLI::App* sub = app.add_subcommand(
      "launch",
      "Start this node's ranks of PROGRAM (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, "
      "GROUP_RANK, MASTER_ADDR, MASTER_PORT set as torchrun does), prefix their output with the "
      "rank, and stop all of them when one fails. Several nodes: run one `dualpipe launch "
      "--nnodes N --node-rank K --master-addr HOST_OF_NODE_0` per node");
  auto options = std::make_shared<runtime::LaunchOptions>();
  auto grace_s = std::make_shared<double>(3.0);
  sub->add_option("-n,--nproc,--nproc-per-node,--nproc_per_node", options->num_ranks,
                  "Ranks to start on this node")
      ->required()
      ->check(CLI::PositiveNumber);
  sub->add_option("--nnodes", options->num_nodes, "Nodes of the job (one launcher on each)")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  sub->add_option("--node-rank,--node_rank", options->node_rank,
                  "This node's index in [0, nnodes): it runs global ranks [K*M, (K+1)*M)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_option("--master-addr,--master_addr", options->master_addr,
                  "Address of node 0, where global rank 0 serves the rendezvous store (default "
                  "on one node: 127.0.0.1, with a private file store instead of a port)");
  CLI::Option* port =
      sub->add_option("--master-port,--master_port", options->master_port,
                      "Rendezvous port (default: a free port on one node, 29500 on several)")
          ->check(CLI::Range(0, 65535));
  sub->add_option("--timeout", options->timeout_s,
                  "Communication timeout of the ranks in seconds (exported as DUALPIPE_TIMEOUT)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--grace", *grace_s,
                  "Seconds between SIGTERM and SIGKILL when stopping the other ranks")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_option("command", options->command, "PROGRAM ARGS... (after --)")->required();
  return {sub, [options, grace_s, port] {
            options->grace_period =
                std::chrono::milliseconds(static_cast<long long>(*grace_s * 1000));
            if (options->num_nodes > 1 && port->count() == 0) {
              options->master_port = kDefaultMultiNodePort;
            }
            return runtime::launch_local(*options);
          }};
}

}  // namespace dualpipe::cli
