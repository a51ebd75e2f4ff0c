// Just enough of CUDA's execution model, on the host, to run the kernels of
// csrc/cuda/ unchanged: every thread of a block is an OS thread; blocks run
// one after another; __syncthreads is a barrier of the block's threads and
// __shfl_xor_sync one of the warp's (each lane publishes its value, waits
// for all 32, reads its partner's); __shared__ variables are statics, which
// is right while one block runs at a time.
//
// What it cannot show: speed, memory coalescing, races that a barrier hides,
// or anything the hardware does differently from this model. What it does
// check beyond CUDA: a barrier that not every thread reaches (a deadlock on a
// GPU too) aborts after a timeout instead of hanging, and, built with
// -fsanitize=alignment (tests/test_cuda_emulated.py does), a vector load or
// store at a misaligned address aborts.
#pragma once

#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

namespace cuda_emulation {

[[noreturn]] inline void abort_on_stuck_barrier() {
  std::fprintf(
      stderr,
      "cuda_emulation: a barrier waited 60 s for threads that never came "
      "(a __syncthreads or shuffle not reached by every thread)\n");
  std::abort();
}

constexpr auto kBarrierTimeout = std::chrono::seconds(60);

#if defined(__linux__)
// A reusable barrier that aborts instead of waiting forever. The waiters
// sleep on the generation counter (a futex) and the last to arrive wakes them
// all at once: with a mutex and a condition variable, each woken thread of a
// block (hundreds of OS threads on a few cores) queued again for the mutex,
// which made most of the emulated suite's time.
class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}

  void arrive_and_wait() {
    const uint32_t generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == count_) {
      // Reset before the release: a thread let through may arrive at the
      // next use of the barrier at once.
      arrived_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
      futex(FUTEX_WAKE_PRIVATE, INT_MAX, nullptr);
      return;
    }
    const auto deadline = std::chrono::steady_clock::now() + kBarrierTimeout;
    while (generation_.load(std::memory_order_acquire) == generation) {
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) {
        abort_on_stuck_barrier();
      }
      const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(left);
      const timespec timeout{
          static_cast<time_t>(seconds.count()),
          static_cast<long>(
              std::chrono::duration_cast<std::chrono::nanoseconds>(left - seconds).count())};
      // Returns at once if the generation has moved on since the load.
      futex(FUTEX_WAIT_PRIVATE, generation, &timeout);
    }
  }

 private:
  void futex(int op, uint32_t value, const timespec* timeout) {
    static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&generation_), op, value, timeout, nullptr, 0);
  }

  const int count_;
  std::atomic<int> arrived_{0};
  std::atomic<uint32_t> generation_{0};
};
#else
// A reusable barrier that aborts instead of waiting forever.
class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}

  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t generation = generation_;
    if (++arrived_ == count_) {
      arrived_ = 0;
      ++generation_;
      all_arrived_.notify_all();
      return;
    }
    if (!all_arrived_.wait_for(lock, kBarrierTimeout, [&] { return generation_ != generation; })) {
      abort_on_stuck_barrier();
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable all_arrived_;
  int count_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
};
#endif

struct BlockState {
  explicit BlockState(int threads)
      : block_barrier(threads), lanes(threads) {
    for (int w = 0; w < (threads + 31) / 32; ++w) {
      warp_barriers.emplace_back(new Barrier(32));
    }
  }
  ~BlockState() {
    for (Barrier* b : warp_barriers) {
      delete b;
    }
  }
  Barrier block_barrier;
  std::vector<Barrier*> warp_barriers;
  std::vector<uint64_t> lanes;  // shuffle exchange, one slot per thread
};

inline thread_local BlockState* current_block = nullptr;

} // namespace cuda_emulation

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

inline void __syncthreads() {
  cuda_emulation::current_block->block_barrier.arrive_and_wait();
}

template <typename T>
T __shfl_xor_sync(unsigned /*mask*/, T value, int lane_mask, int width = 32) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>);
  cuda_emulation::BlockState& block = *cuda_emulation::current_block;
  const unsigned lane = threadIdx.x % 32;
  const unsigned warp_base = threadIdx.x - lane;
  // An xor partner outside the lane's width-aligned group reads itself.
  unsigned partner = lane ^ static_cast<unsigned>(lane_mask);
  if (partner / width != lane / width) {
    partner = lane;
  }
  uint64_t slot = 0;
  std::memcpy(&slot, &value, sizeof(T));
  cuda_emulation::Barrier& warp = *block.warp_barriers[threadIdx.x / 32];
  block.lanes[threadIdx.x] = slot;
  warp.arrive_and_wait();
  slot = block.lanes[warp_base + partner];
  warp.arrive_and_wait();
  T result;
  std::memcpy(&result, &slot, sizeof(T));
  return result;
}

namespace cuda_emulation {

// Runs kernel(args) on grid_blocks blocks of block_threads threads.
template <typename Args>
void launch(
    void (*kernel)(Args),
    int64_t grid_blocks,
    int block_threads,
    const Args& args) {
  if (grid_blocks <= 0 || block_threads % 32 != 0) {
    std::fprintf(stderr, "cuda_emulation: bad launch shape %lld x %d\n",
                 static_cast<long long>(grid_blocks), block_threads);
    std::abort();
  }
  BlockState block(block_threads);
  std::vector<std::thread> threads;
  for (int t = 0; t < block_threads; ++t) {
    threads.emplace_back([&, t] {
      current_block = &block;
      threadIdx = {static_cast<unsigned>(t), 0, 0};
      blockDim = {static_cast<unsigned>(block_threads), 1, 1};
      gridDim = {static_cast<unsigned>(grid_blocks), 1, 1};
      for (int64_t b = 0; b < grid_blocks; ++b) {
        blockIdx = {static_cast<unsigned>(b), 0, 0};
        kernel(args);
        // The next block starts only when this one is done with the
        // (static) shared memory.
        block.block_barrier.arrive_and_wait();
      }
    });
  }
  for (std::thread& t : threads) {
    t.join();
  }
}

} // namespace cuda_emulation
