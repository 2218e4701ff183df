"""Ranking: the vector index, query strategies, seed rules, priority levels and the pool they share."""
