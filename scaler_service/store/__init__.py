"""Stores that coordinate scaler replicas: in memory (one replica) and Redis (several)."""
