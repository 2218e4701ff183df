"""The HTTP side: the ML backend protocol Label Studio speaks, thin handlers over the model and the queue."""
