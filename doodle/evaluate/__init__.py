"""The evaluate stage: the streamed error analysis of the validation split (``analysis``), the
files it writes under reports/ (``reports``), and what the network sees: embedding and activation
views (``views``)."""
