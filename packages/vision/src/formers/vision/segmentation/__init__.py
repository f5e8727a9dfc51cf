"""Panoptic segmentation in formers-vision (kMaX-DeepLab): data, losses, post-processing, metrics and the task.

* :mod:`~formers.vision.segmentation.panoptic`: the COCO panoptic format (reader, COCO instances converter);
* :mod:`~formers.vision.segmentation.scenes`: the generated panoptic scenes (the embedded default data);
* :mod:`~formers.vision.segmentation.data`: datasets, transforms, ``PanopticBatch`` and ``PanopticDataModule``;
* :mod:`~formers.vision.segmentation.criterion`: Hungarian matching and the kMaX losses;
* :mod:`~formers.vision.segmentation.postprocess`: the official panoptic inference;
* :mod:`~formers.vision.segmentation.metrics`: PQ / SQ / RQ (torchmetrics ``PanopticQuality``);
* :mod:`~formers.vision.segmentation.io`: panoptic PNG, segments JSON and overlay writers;
* :mod:`~formers.vision.segmentation.task`: ``PanopticSegmentationTask`` (training and evaluation).

The model family is :mod:`formers.vision.models.kmax`.
"""
