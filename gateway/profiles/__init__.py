"""The stored customer profile: the customer store, its cache, batched turns, contact points
(e-mail, phone) and the attributes/identity service."""
