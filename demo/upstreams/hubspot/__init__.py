"""The sample HubSpot CRM v3 contacts API: the service (``api``) and its search
semantics (``search``)."""
