// train_step: SGD steps on a TorchScript module that calls hybrid_entropy_ext's
// fused op, in a C++ program with no Python in the process. It shows that the
// op's backward (a C++ autograd kernel) works wherever the op library is loaded.
//
// usage: train_step <op_library.so> <scripted_module.pt> [steps] [inputs.pt]
//
//   op_library.so       hybrid_entropy_ext._ops.library_path()
//   scripted_module.pt  torch.jit.save'd module, forward(obs) -> Dict[str, Tensor]
//                       with a "total" loss (examples/cpp/export_module.py)
//   steps               number of SGD steps (default 3)
//   inputs.pt           torch.save'd {"obs": Tensor, "lr": float}
//                       (default: inputs.pt in the module's directory)
//
// Prints one line per step: "step <i> loss <total before the step>".
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include <torch/optim/sgd.h>
#include <torch/script.h>
#include <torch/serialize.h>

namespace {

int usage(const char* program) {
  std::cerr << "usage: " << program
            << " <op_library.so> <scripted_module.pt> [steps] [inputs.pt]\n";
  return 2;
}

std::string directory_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// Reads a file written by Python's torch.save (any picklable value of tensors,
// numbers, strings, lists and dicts).
c10::IValue load_python_saved(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    throw std::runtime_error("cannot open " + path);
  }
  std::vector<char> bytes(
      (std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  return torch::pickle_load(bytes);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 5) {
    return usage(argv[0]);
  }
  const std::string op_library = argv[1];
  const std::string module_path = argv[2];
  const int steps = argc > 3 ? std::atoi(argv[3]) : 3;
  const std::string inputs_path =
      argc > 4 ? argv[4] : directory_of(module_path) + "/inputs.pt";
  if (steps < 0) {
    return usage(argv[0]);
  }

  // Loading the library runs its TORCH_LIBRARY registrations: the op's schema
  // and its CPU, Meta and Autograd kernels, all C++. The library references no
  // libpython symbol, so RTLD_NOW resolves everything up front. RTLD_GLOBAL
  // makes its symbols available to libraries loaded later, as for any plugin.
  void* handle = dlopen(op_library.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (handle == nullptr) {
    std::cerr << "train_step: cannot load the op library: " << dlerror() << "\n";
    return 1;
  }

  try {
    torch::jit::script::Module module = torch::jit::load(module_path);
    module.train();

    const c10::IValue inputs_value = load_python_saved(inputs_path);
    const auto inputs = inputs_value.toGenericDict();
    const torch::Tensor obs = inputs.at("obs").toTensor();
    const double lr = inputs.at("lr").toDouble();

    std::vector<torch::Tensor> parameters;
    for (const torch::Tensor& p : module.parameters()) {
      parameters.push_back(p);
    }
    torch::optim::SGD optimizer(parameters, torch::optim::SGDOptions(lr));

    for (int step = 0; step < steps; ++step) {
      optimizer.zero_grad();
      const auto losses = module.forward({obs}).toGenericDict();
      const torch::Tensor total = losses.at("total").toTensor();
      total.backward();
      optimizer.step();
      std::printf("step %d loss %.9g\n", step, total.item<double>());
    }
  } catch (const std::exception& e) {
    std::cerr << "train_step: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
