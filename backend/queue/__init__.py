"""The queue: names, job paths, timeouts and retries (`spec`), and the producer the web process uses."""
