"""A trained (or freshly built) network handed on: ONNX, a `torch.export` program, or a
module that registers it in timm's model registry.

`load_network` reads a checkpoint or a spec into ``(spec, model)``; `export` writes one
of the three forms and checks it where it can (ONNX against PyTorch with onnxruntime).
"""

from coatsearch.export.errors import ExportError
from coatsearch.export.files import FORMATS, export, load_network, output_path

__all__ = ["FORMATS", "ExportError", "export", "load_network", "output_path"]
