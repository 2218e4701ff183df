"""RQ jobs of broaden: plain functions that the webhook enqueues."""
