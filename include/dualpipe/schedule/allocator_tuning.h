#pragma once
// Process-wide allocator settings for programs that build large schedules.

namespace dualpipe::schedule {

// Keeps freed large blocks in the heap instead of returning them to the kernel.
// NOTE: glibc serves blocks above its mmap threshold with fresh mmap()s and unmaps them on
// free, so every large vector built, grown or freed while building, validating and simulating
// a big schedule (64 ranks x 4096 micro-batches: ~50 MB of ops, several temporaries) pays page
// faults again. Measured here: 449 ms with glibc's defaults, 112 ms with this, same ops.
// Call once at the start of main(); it changes only the allocator's thresholds (no-op
// elsewhere than glibc). Libraries never call it on their own.
void tune_allocator_for_large_schedules();

}  // namespace dualpipe::schedule
