#pragma once
// Checks that name the offending values, in the style of gloo's GLOO_ENFORCE_EQ. Header-only and
// free of LibTorch, so every module (schedule and sim included) uses the same ones.
//
//   DUALPIPE_CHECK(cond, parts...)     a caller's mistake (bad argument, bad config, bad file):
//                                      throws std::invalid_argument with the parts streamed
//                                      together (operator<<), e.g.
//                                      DUALPIPE_CHECK(n >= 1, "needs n >= 1, got n=", n);
//   DUALPIPE_CHECK_EQ(a, b, parts...)  also _NE, _LT, _LE, _GT, _GE: throws std::invalid_argument
//                                      "<parts>: expected a == b, got a=<value>, b=<value>"
//                                      (a and b as written in the source)
//   DUALPIPE_ASSERT(cond, parts...)    an invariant only a bug in dualpipe can break: throws
//                                      dualpipe::InternalError (a std::logic_error) naming the
//                                      file, the line and the condition.
//
// Each evaluates its operands once and builds the message only on failure.

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace dualpipe {

// Thrown by DUALPIPE_ASSERT: the library reached a state its own logic rules out.
class InternalError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

namespace check_detail {

template <typename... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

template <typename A, typename B, typename... Parts>
[[noreturn]] void comparison_failed(const char* a_text, const char* op, const char* b_text,
                                    const A& a, const B& b, const Parts&... parts) {
  std::string message = concat(parts...);
  if (!message.empty()) message += ": ";
  throw std::invalid_argument(message + concat("expected ", a_text, " ", op, " ", b_text, ", got ",
                                               a_text, "=", a, ", ", b_text, "=", b));
}

template <typename... Parts>
[[noreturn]] void assert_failed(const char* file, int line, const char* condition,
                                const Parts&... parts) {
  std::string message = concat("internal error at ", file, ":", line,
                               " (a bug in dualpipe; please report it): ", condition, " failed");
  const std::string detail = concat(parts...);
  if (!detail.empty()) message += ": " + detail;
  throw InternalError(message);
}

}  // namespace check_detail
}  // namespace dualpipe

#define DUALPIPE_CHECK(cond, ...)                                                 \
  do {                                                                            \
    if (!(cond)) {                                                                \
      throw std::invalid_argument(::dualpipe::check_detail::concat(__VA_ARGS__)); \
    }                                                                             \
  } while (false)

#define DUALPIPE_CHECK_OP_(a, op, b, ...)                                            \
  do {                                                                               \
    const auto& dualpipe_check_a_ = (a);                                             \
    const auto& dualpipe_check_b_ = (b);                                             \
    if (!(dualpipe_check_a_ op dualpipe_check_b_)) {                                 \
      ::dualpipe::check_detail::comparison_failed(#a, #op, #b, dualpipe_check_a_,    \
                                                  dualpipe_check_b_, ##__VA_ARGS__); \
    }                                                                                \
  } while (false)

#define DUALPIPE_CHECK_EQ(a, b, ...) DUALPIPE_CHECK_OP_(a, ==, b, ##__VA_ARGS__)
#define DUALPIPE_CHECK_NE(a, b, ...) DUALPIPE_CHECK_OP_(a, !=, b, ##__VA_ARGS__)
#define DUALPIPE_CHECK_LT(a, b, ...) DUALPIPE_CHECK_OP_(a, <, b, ##__VA_ARGS__)
#define DUALPIPE_CHECK_LE(a, b, ...) DUALPIPE_CHECK_OP_(a, <=, b, ##__VA_ARGS__)
#define DUALPIPE_CHECK_GT(a, b, ...) DUALPIPE_CHECK_OP_(a, >, b, ##__VA_ARGS__)
#define DUALPIPE_CHECK_GE(a, b, ...) DUALPIPE_CHECK_OP_(a, >=, b, ##__VA_ARGS__)

#define DUALPIPE_ASSERT(cond, ...)                                                       \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      ::dualpipe::check_detail::assert_failed(__FILE__, __LINE__, #cond, ##__VA_ARGS__); \
    }                                                                                    \
  } while (false)
