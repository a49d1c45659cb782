"""The train stage: the train params (``params``), devices and distribution
(``strategy``), what ``model.fit`` reads (``feed``), the compiled model and its callbacks
(``compile``, ``callbacks``, ``keras_metrics``), fitting one model (``trainer``) with exact
resumption (``resume``) and BatchNorm recalibration (``batchnorm``), the run of one model or a
k-fold / seed ensemble with its checks (``ensemble``, ``folds``)."""
