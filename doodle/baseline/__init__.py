"""The baseline stage: a classical PCA + SVM (scikit-learn) on a bounded sample of the training
images, scored on the validation split the network is scored on (``run``)."""
