"""Build script: one ``pip install`` configures CMake, builds the native part and installs the package.

The native part (pybind11 module ``mindpet._native`` and the CPU kernel library) is built by CMake
with cmake/ninja/pybind11 taken from PyPI (see pyproject.toml).  Set ``MINDPET_BUILD_TYPE`` to
``Debug`` for a debug build and ``MINDPET_CMAKE_ARGS`` to pass extra CMake arguments.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def read_version() -> str:
    text = (ROOT / "python" / "mindpet" / "_version.py").read_text(encoding="utf-8")
    return re.search(r'__version__\s*=\s*"([^"]+)"', text).group(1)


def read_mindspore_requirement() -> str:
    """The supported MindSpore releases, e.g. ``mindspore>=2.9,<2.11`` (``MINDSPORE_REQUIREMENT``)."""
    text = (ROOT / "python" / "mindpet" / "_version.py").read_text(encoding="utf-8")
    return re.search(r'MINDSPORE_REQUIREMENT\s*=\s*"([^"]+)"', text).group(1)


class CMakeExtension(Extension):
    """An extension whose sources are built by the top-level CMakeLists.txt."""

    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configure and build the CMake project; outputs land next to ``mindpet._native``."""

    def build_extension(self, ext: Extension) -> None:
        import pybind11  # build requirement

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_type = os.environ.get("MINDPET_BUILD_TYPE", "Release")
        build_temp = Path(self.build_temp).resolve() / "cmake"
        build_temp.mkdir(parents=True, exist_ok=True)
        args = [
            f"-DCMAKE_BUILD_TYPE={build_type}",
            f"-DMINDPET_OUTPUT_DIR={out_dir}",
            f"-DMINDPET_VERSION={read_version()}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
        ]
        args += shlex.split(os.environ.get("MINDPET_CMAKE_ARGS", ""))
        try:
            import ninja  # noqa: F401  build requirement

            args += ["-G", "Ninja"]
        except ImportError:
            pass
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_temp), *args], check=True)
        jobs = str(os.cpu_count() or 2)
        subprocess.run(["cmake", "--build", str(build_temp), "--parallel", jobs], check=True)

    def copy_extensions_to_source(self) -> None:
        """Editable installs: also copy the CPU kernel library (built beside the extension) into the tree."""
        super().copy_extensions_to_source()
        built = Path(self.build_lib) / "mindpet" / "lib"
        if built.is_dir():
            shutil.copytree(built, ROOT / "python" / "mindpet" / "lib", dirs_exist_ok=True)


setup(
    name="mindpet",
    version=read_version(),
    description="Parameter-efficient fine-tuning (delta tuning) for MindSpore, with fused kernels",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    package_dir={"": "python"},
    packages=find_packages(where="python"),
    ext_modules=[CMakeExtension("mindpet._native")],
    cmdclass={"build_ext": CMakeBuild},
    # MindSpore: a range of releases (2.9 and 2.10; python/mindpet/_version.py), not one pin; pip picks
    # the newest in range unless told otherwise (`make test-compat` installs 2.9.0 beside it).
    # NumPy 1.x: MindSpore 2.9 requires it; 2.10 allows NumPy 2 but is compiled against 1.x (with NumPy 2
    # the first PyNative call of a process fails with SystemError, bfloat16 tensors cannot cross to numpy).
    install_requires=[read_mindspore_requirement(), "numpy>=1.22,<2", "pyyaml", "safetensors"],
    extras_require={
        "test": ["pytest", "hypothesis", "pyyaml", "tokenizers", "tqdm", "safetensors", "gguf==0.19.0"],
        "bench": ["tokenizers", "tqdm", "matplotlib", "psutil", "safetensors", "gguf==0.19.0"],
        # The optional peer benchmark (python -m benchmarks.peer): PyTorch + Hugging Face PEFT side by side.
        "peer": ["torch==2.13.0", "transformers==5.24.0", "peft==0.21.2"],
    },
    zip_safe=False,
)
