"""The sample Shopify Admin REST API: the service (``api``), its query and search
syntax (``filters``) and the JSON shapes it answers with (``records``)."""
