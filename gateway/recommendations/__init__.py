"""Product recommendations: a model built from stored events, served with live stock.

``builder`` learns and stores (``gateway recs build``), ``serving`` answers one
customer with a lookup and filters, ``evaluation`` measures the same model offline
(``gateway recs eval``).
"""

# Nothing is imported here: `gateway recs` must not pay for the serving stack, nor
# the app for numpy. Import from the modules (serving, builder, evaluation).
