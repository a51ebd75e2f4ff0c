// The avx512 build of the row kernels; setup.py gives this file its ISA flags.
#define HEE_ISA avx512
#include "row_kernels_impl.h"
#include "action_entropy_kernels.h"
