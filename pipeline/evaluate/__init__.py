"""``trailers evaluate``: per-genre metrics of the trained models on a labelled split (``run``),
pure metric functions (``metrics``), the report (``report``), PR curves (``plots``)."""
