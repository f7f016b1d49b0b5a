#include "dualpipe/schedule/allocator_tuning.h"

#include <cstdlib>  // defines __GLIBC__ on glibc systems

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace dualpipe::schedule {

void tune_allocator_for_large_schedules() {
#if defined(__GLIBC__)
  // NOTE: glibc caps the mmap threshold at 32 MiB on 64-bit (larger values are refused);
  // every vector a 64 x 4096 schedule needs is below that.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 64 << 20);
#endif
}

}  // namespace dualpipe::schedule
