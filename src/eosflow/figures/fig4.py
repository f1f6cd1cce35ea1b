"""Figure 4: progressive flattening, the protocol's first setting (the code: :mod:`.flattening`,
shared with fig6 and ext/mse_flattening)."""

from .flattening import fig4_claims, make_fig4, s_max_after, summarize

__all__ = ["fig4_claims", "make_fig4", "s_max_after", "summarize"]
