"""``relaygen bench``: accuracy and speed of RelayGen against its baselines on one machine.

``methods`` names what is compared, ``costs`` measures each model's evaluation cost and predicts run
times from token counts, ``runner`` answers problems (methods interleaved per problem, results appended
to a resumable JSONL file), ``summary`` computes the statistics and ``report`` writes Markdown and plots.
"""
