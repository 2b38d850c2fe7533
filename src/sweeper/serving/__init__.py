"""What comes after a search: the best model packaged for serving (:mod:`.package`),
served over HTTP (:mod:`.serve`), made smaller or faster (:mod:`.compress`) and exported
to TorchScript and ONNX (:mod:`.export`)."""
