"""One module per figure; :mod:`eosflow.figures.common` holds the shared plotting and claims helpers."""
