"""Many requests at once over one loaded pair: the concurrent engine, its sequence pool, and the wiring
that builds it for each way a backend serves concurrent requests (``Backend.concurrency``)."""
