from setuptools import setup

# kernels/, prototxt/ and host/ live at the top of the repository (the layout users know from
# PipeCNN and Caffe) and are mapped into the package so that `pip install .` ships them.
setup(
    name="cnnfpga",
    version="0.1.0",
    description="Caffe nets run the way an FPGA streaming accelerator would: OpenCL kernels + host layers",
    python_requires=">=3.9",
    packages=["cnnfpga", "cnnfpga.caffe", "cnnfpga.layers", "cnnfpga.runtime", "cnnfpga.host",
              "cnnfpga.kernels", "cnnfpga.prototxt", "cnnfpga.design"],
    package_dir={"cnnfpga": "cnnfpga", "cnnfpga.host": "host", "cnnfpga.kernels": "kernels",
                 "cnnfpga.prototxt": "prototxt"},
    package_data={"cnnfpga.caffe": ["caffe.proto"], "cnnfpga.kernels": ["*.cl", "*.h"],
                  "cnnfpga.prototxt": ["*.prototxt", "*.caffemodel", "*.json", "*.png", "*.md"],
                  "cnnfpga.design": ["boards/*.json"]},
    install_requires=["numpy>=1.22", "protobuf>=4.21", "pillow>=9", "pyopencl>=2022.1", "threadpoolctl>=3.1"],
    entry_points={"console_scripts": ["cnnfpga = cnnfpga.cli:main"]},
    extras_require={"test": ["pytest>=7", "opencv-python-headless==4.10.0.84", "matplotlib>=3.5",
                             "dask[distributed]>=2023.1"],
                    "distributed": ["dask[distributed]>=2023.1"],
                    "progress": ["tqdm"], "report": ["matplotlib>=3.5"]},
)
