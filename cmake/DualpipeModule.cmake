# dualpipe_add_module(NAME [DEPS target...])
# One module = one library target `dualpipe_<NAME>` (alias `dualpipe::<NAME>`) built from
# src/<NAME>/*.cpp, with public headers in include/dualpipe/<NAME>/.
function(dualpipe_add_module name)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  file(GLOB sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cpp)
  add_library(dualpipe_${name} ${sources})
  add_library(dualpipe::${name} ALIAS dualpipe_${name})
  set_target_properties(dualpipe_${name} PROPERTIES EXPORT_NAME ${name} POSITION_INDEPENDENT_CODE ON)
  target_compile_features(dualpipe_${name} PUBLIC cxx_std_17)
  target_include_directories(dualpipe_${name}
    PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include> $<INSTALL_INTERFACE:include>
    PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  target_link_libraries(dualpipe_${name} PUBLIC ${ARG_DEPS})
  dualpipe_target_options(dualpipe_${name})
  install(TARGETS dualpipe_${name} EXPORT dualpipeTargets)
endfunction()

# Warnings and sanitizers shared by every target of the project.
function(dualpipe_target_options target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  if(DUALPIPE_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
endfunction()

# dualpipe_add_test_suite(MODULE [DEPS target...])
# Builds tests/<MODULE>/*_test.cpp into `dualpipe_<MODULE>_tests` and registers each test.
function(dualpipe_add_test_suite module)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  file(GLOB sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${module}/*_test.cpp)
  if(NOT sources)
    return()
  endif()
  add_executable(dualpipe_${module}_tests ${sources})
  target_link_libraries(dualpipe_${module}_tests PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  target_compile_definitions(dualpipe_${module}_tests PRIVATE
    DUALPIPE_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    DUALPIPE_ORACLE_DIR="${PROJECT_SOURCE_DIR}/tests/data/reference-order"
    DUALPIPE_CLI_PATH="$<TARGET_FILE_DIR:dualpipe_cli>/dualpipe")
  dualpipe_target_options(dualpipe_${module}_tests)
  include(GoogleTest)
  gtest_discover_tests(dualpipe_${module}_tests DISCOVERY_TIMEOUT 60
    PROPERTIES LABELS ${module} TIMEOUT 600)
endfunction()
