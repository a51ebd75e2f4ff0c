// The avx2 build of the row kernels; setup.py gives this file its ISA flags.
#define HEE_ISA avx2
#include "row_kernels_impl.h"
#include "action_entropy_kernels.h"
