"""The clinic's web UI: server-rendered Jinja2 pages with htmx, over the same guards, services
and audit trail as the JSON API (``web.routing``)."""
