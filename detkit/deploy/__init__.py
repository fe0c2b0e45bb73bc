"""detkit.deploy: running a trained detector outside training.

    predictor.py      Predictor and load_model: the inference entry point for arrays, files and folders
    infer_files.py    inference over image files and folders: batches, drawings, detections.json
    export_graph.py   the traceable detector graph (fixed input size, no data-dependent Python)
    export.py         export to TorchScript or ONNX with its settings checked first
    export_verify.py  an exported model's detections against the eager model's on real images
    exported_model.py the runner of an exported file (TorchScript or ONNX Runtime) with the Predictor's interface
"""
