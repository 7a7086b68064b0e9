"""Three short texts for the test perplexity task (no download)."""

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Rain forms when water vapour condenses into droplets that grow heavy enough to fall.",
    "A triangle has three sides, and the angles inside it add up to one hundred and eighty degrees.",
]


def docs(**_):
    import datasets

    return {"test": datasets.Dataset.from_list([{"text": t} for t in TEXTS])}
