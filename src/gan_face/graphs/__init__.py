"""The networks as scoring runs them: OpenVINO graphs built from the weights, run on the CPU at one thread each.

Training defines the networks in PyTorch (:mod:`gan_face.training.network`, facenet-pytorch's MTCNN) and saves
their weights; scoring builds the same layers here, from the same tensors, with OpenVINO's operator set, so a scan
needs neither torch (whose import was about 2 seconds of every scan's start-up) nor an exported file beside the
weights, and any card (shipped, fine-tuned, older) loads the same way. ``tests/test_openvino.py`` checks every
graph against its PyTorch definition.

Measured on these 2-core VMs at one thread (``experiments/bench_networks.py``): OpenVINO in float32 runs the face
CNN 1.6x, the frame CNN 1.6x and MTCNN's networks 1.5-1.7x faster than eager PyTorch at the batch sizes used
here, with outputs within 3e-6 of torch's. Its default on CPUs with bfloat16 units is bfloat16, 2.4-3.4x faster
but off by up to 0.1 in a logit, so float32 is asked for explicitly. ONNX Runtime was slower than eager PyTorch
for batches of 8 and more.

Every network is compiled for a fixed number of rows (calls are padded to it), like the torch code before it:
the math kernels depend on the batch size, and a fixed one gives an image the same outputs in any batch.

One module per architecture, as timm keeps them, on a runtime they share:

* :mod:`.runtime`: OpenVINO's import (without its telemetry), the device a scan runs on, and the compiled
  networks (:class:`~.runtime.CompiledNetwork`, :class:`~.runtime.ShapeCache`);
* :mod:`.layers`: the graph operations the architectures share (constants, convolutions, dense layers, a
  BatchNorm folded into its convolution);
* :mod:`.efficientnet`: EfficientNet-Lite, the face and frame CNNs;
* :mod:`.mtcnn`: MTCNN's P-Net, R-Net and O-Net (the search around them is :mod:`gan_face._mtcnn`);
* :mod:`.clip_vit`: CLIP ViT-B/16's image tower, the clip view's encoder.

Nothing is imported here: the runtime alone (``runtime_device``) loads neither OpenVINO nor a builder.
"""
