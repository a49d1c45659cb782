"""What every other subpackage stands on, and nothing above it: params.yaml loading and errors
(``params``, ``errors``), the stages' paths (``paths``), the process pool and allocator settings
(``workers``, ``malloc``), MAP@3 in numpy (``metrics``), plotting (``plots``), and TensorFlow's
quiet start-up (``quiet_tensorflow``)."""
