"""The synthetic cloud console's fixed vocabulary: services and pages, tasks, personas, places."""

from __future__ import annotations

# service -> (one-line description, pages). The catalog service gets one detail page per service.
SERVICES: dict[str, tuple[str, tuple[str, ...]]] = {
    # compute
    "compute": ("Resizable virtual machines in the cloud",
                ("instances", "launch_instance", "instance_details", "images", "key_pairs",
                 "security_groups", "volumes", "auto_scaling", "spot_requests")),
    "containers": ("Run and manage Docker containers without servers to manage",
                   ("clusters", "services", "task_definitions", "repositories", "deployments", "logs")),
    "kubernetes": ("Managed Kubernetes control plane and node groups",
                   ("clusters", "node_groups", "addons", "workloads", "access_entries")),
    "serverless": ("Run code in response to events without provisioning servers",
                   ("functions", "create_function", "function_details", "triggers", "layers", "versions")),
    "batch": ("Fully managed batch processing at any scale",
              ("jobs", "job_queues", "compute_environments", "job_definitions")),
    "app_platform": ("Deploy and scale web applications from code",
                     ("applications", "environments", "deployments", "configuration")),
    # storage
    "object_storage": ("Durable object storage for any amount of data",
                       ("buckets", "create_bucket", "bucket_details", "lifecycle_rules", "access_points",
                        "replication", "storage_lens")),
    "block_storage": ("High-performance block volumes for virtual machines",
                      ("volumes", "snapshots", "lifecycle", "encryption")),
    "file_storage": ("Shared elastic file systems", ("file_systems", "mount_targets", "access_points", "backups")),
    "backup": ("Centralized backup across services", ("plans", "vaults", "jobs", "restore", "reports")),
    "archive": ("Low-cost long-term archive storage", ("vaults", "retrievals", "policies")),
    # databases
    "relational_db": ("Managed relational databases (PostgreSQL, MySQL)",
                      ("databases", "create_database", "instance_details", "snapshots", "parameter_groups",
                       "performance_insights", "replicas")),
    "nosql_db": ("Key-value and document database with single-digit millisecond latency",
                 ("tables", "create_table", "items", "indexes", "capacity", "streams")),
    "cache": ("In-memory caching with Redis and Memcached",
        ("clusters", "create_cluster", "parameter_groups", "metrics")),
    "data_warehouse": ("Petabyte-scale columnar data warehouse",
                       ("clusters", "query_editor", "workgroups", "datashares", "snapshots")),
    "graph_db": ("Managed graph database", ("clusters", "notebooks", "snapshots")),
    # networking
    "vpc": ("Isolated virtual networks",
            ("vpcs", "subnets", "route_tables", "internet_gateways", "nat_gateways", "peering", "endpoints",
             "flow_logs")),
    "dns": ("Scalable domain name system and domain registration",
            ("hosted_zones", "records", "health_checks", "traffic_policies", "domains")),
    "cdn": ("Content delivery network for low-latency delivery",
            ("distributions", "create_distribution", "behaviors", "invalidations", "cache_policies")),
    "load_balancing": ("Distribute traffic across targets", ("load_balancers", "target_groups", "listeners", "rules")),
    "api_gateway": ("Create, publish and secure APIs at scale",
                    ("apis", "create_api", "stages", "routes", "usage_plans", "authorizers")),
    "vpn": ("Secure connections to on-premises networks", ("connections", "gateways", "client_endpoints")),
    # security and identity
    "iam": ("Manage access to cloud resources",
            ("users", "roles", "policies", "groups", "access_keys", "identity_providers", "access_analyzer")),
    "key_management": ("Create and control encryption keys", ("keys", "create_key", "aliases", "key_policies")),
    "secrets": ("Rotate and retrieve secrets", ("secrets", "create_secret", "rotation")),
    "waf": ("Web application firewall", ("web_acls", "rules", "ip_sets", "bot_control")),
    "security_hub": ("Security posture findings in one place", ("findings", "standards", "insights", "integrations")),
    "certificates": ("Provision and manage TLS certificates", ("certificates", "request", "import", "validation")),
    "compliance": ("Continuous audits against compliance frameworks",
        ("assessments", "controls", "reports", "frameworks")),
    # observability
    "metrics": ("Metrics, dashboards and alarms for your resources",
                ("dashboards", "alarms", "create_alarm", "metrics_explorer", "insights", "anomalies")),
    "logs": ("Centralized log storage and queries",
             ("log_groups", "log_insights", "live_tail", "subscriptions", "metric_filters")),
    "tracing": ("Distributed request tracing", ("service_map", "traces", "analytics", "sampling_rules")),
    "audit_trail": ("Record of account activity and API calls", ("event_history", "trails", "lake_queries")),
    "health": ("Service health and scheduled changes", ("dashboard", "events", "scheduled_changes")),
    "config_rules": ("Resource configuration history and rules",
        ("rules", "resources", "conformance_packs", "timeline")),
    # analytics
    "etl": ("Serverless data integration and ETL jobs",
            ("jobs", "crawlers", "data_catalog", "workflows", "connections")),
    "query_service": ("Interactive SQL queries on data in object storage",
                      ("query_editor", "saved_queries", "history", "workgroups")),
    "streaming": ("Collect and process real-time data streams",
                  ("streams", "create_stream", "consumers", "analytics_apps", "delivery_streams")),
    "bi_dashboards": ("Business intelligence dashboards", ("dashboards", "analyses", "datasets", "data_sources")),
    "search_service": ("Managed search and log analytics clusters",
        ("domains", "create_domain", "dashboards", "indices")),
    "data_lake": ("Build and govern a secure data lake", ("locations", "permissions", "blueprints", "tags")),
    # machine learning and AI
    "ml_studio": ("Build, train and deploy machine learning models",
                  ("notebooks", "training_jobs", "create_training_job", "models", "endpoints", "experiments",
                   "pipelines", "feature_store")),
    "ai_vision": ("Image and video analysis", ("image_analysis", "labels", "custom_models")),
    "ai_language": ("Natural language processing", ("text_analysis", "entities", "custom_classifiers")),
    "ai_assistant": ("Generative AI assistants and foundation models",
                     ("playground", "knowledge_bases", "agents", "guardrails", "model_access")),
    # developer tools
    "code_repos": ("Private Git repositories", ("repositories", "pull_requests", "commits", "branches")),
    "ci_build": ("Continuous integration builds", ("projects", "builds", "build_history", "reports")),
    "deploy_pipeline": ("Continuous delivery pipelines", ("pipelines", "create_pipeline", "executions", "approvals")),
    "infra_templates": ("Infrastructure as code stacks and templates",
                        ("stacks", "create_stack", "templates", "drift", "change_sets")),
    "cloud_shell": ("Browser-based shell with the CLI preinstalled", ("terminal", "sessions")),
    # application integration
    "messaging_queue": ("Fully managed message queues", ("queues", "create_queue", "messages", "dead_letter")),
    "notifications_svc": ("Pub/sub messaging and mobile notifications", ("topics", "subscriptions", "publish")),
    "event_bus": ("Serverless event bus and schedules", ("buses", "rules", "schedules", "pipes")),
    "workflows_svc": ("Visual workflows for distributed applications", ("state_machines", "executions", "activities")),
    # account management
    "billing": ("Bills, payments and invoices", ("bills", "payments", "invoices", "tax_settings", "credits")),
    "cost_explorer": ("Visualize, understand and manage costs",
                      ("reports", "forecast", "savings_plans", "cost_anomalies", "rightsizing")),
    "budgets": ("Set custom budgets and alerts", ("budgets", "create_budget", "alerts", "budget_actions")),
    "organizations": ("Central management of multiple accounts", ("accounts", "policies", "organizational_units",
                                                                   "invitations")),
    "support": ("Support cases and knowledge center", ("cases", "create_case", "knowledge_center", "trusted_advisor")),
    "marketplace": ("Find and buy third-party software", ("products", "subscriptions", "private_offers")),
    "console": ("The console home", ("home", "search", "notifications", "recently_visited", "whats_new")),
    "catalog": ("Browse all services", ("home", "browse")),
}

# Pages every task may pass through between steps: the console's navigation hubs.
HUB_ACTIVITIES = ("console;home", "console;search", "console;notifications", "console;recently_visited")
HUB_WEIGHTS = (0.5, 0.25, 0.1, 0.15)

# task -> services it works with, main service first. Tasks are chains over these services' pages.
TASKS: dict[str, tuple[str, ...]] = {
    "monitoring": ("metrics", "logs", "health", "tracing"),
    "incident_response": ("logs", "tracing", "metrics", "audit_trail", "support"),
    "cost_management": ("cost_explorer", "billing", "budgets"),
    "budget_planning": ("budgets", "cost_explorer", "organizations"),
    "explore_new_services": ("catalog", "console", "marketplace"),
    "setup_environment": ("iam", "vpc", "compute", "key_management"),
    "networking_setup": ("vpc", "dns", "load_balancing", "vpn", "cdn"),
    "identity_management": ("iam", "organizations", "secrets"),
    "security_audit": ("security_hub", "waf", "compliance", "config_rules", "audit_trail"),
    "deploy_application": ("compute", "load_balancing", "app_platform", "deploy_pipeline", "certificates"),
    "container_ops": ("containers", "kubernetes", "code_repos", "ci_build"),
    "serverless_dev": ("serverless", "api_gateway", "event_bus", "messaging_queue", "nosql_db"),
    "database_admin": ("relational_db", "nosql_db", "cache", "backup"),
    "data_analytics": ("etl", "query_service", "data_warehouse", "bi_dashboards", "data_lake"),
    "streaming_pipelines": ("streaming", "etl", "search_service", "notifications_svc"),
    "ml_training": ("ml_studio", "object_storage", "ai_vision", "ai_language"),
    "storage_management": ("object_storage", "block_storage", "file_storage", "archive", "backup"),
    "support_cases": ("support", "health", "billing"),
    "infra_as_code": ("infra_templates", "cloud_shell", "code_repos", "deploy_pipeline"),
    "generative_ai": ("ai_assistant", "ml_studio", "object_storage", "workflows_svc"),
    "batch_processing": ("batch", "object_storage", "graph_db", "workflows_svc"),
}

# persona -> (share of users, {task: weight}). Persona 2 and Persona 4 differ by one minor task, so
# clustering should merge them; Persona 6 and Persona 7 are rare (at `small` scale Persona 6 is just
# separable from its users' task mix, Persona 7 is not).
PERSONAS: dict[str, tuple[float, dict[str, float]]] = {
    "Persona 1": (0.255, {"monitoring": 0.35, "incident_response": 0.25, "deploy_application": 0.15,
                          "support_cases": 0.1, "explore_new_services": 0.15}),
    "Persona 2": (0.135, {"cost_management": 0.4, "budget_planning": 0.25, "explore_new_services": 0.15,
                          "support_cases": 0.1, "storage_management": 0.1}),
    "Persona 3": (0.22, {"setup_environment": 0.25, "networking_setup": 0.2, "identity_management": 0.15,
                         "security_audit": 0.15, "infra_as_code": 0.15, "explore_new_services": 0.1}),
    "Persona 4": (0.12, {"cost_management": 0.38, "budget_planning": 0.27, "explore_new_services": 0.15,
                         "support_cases": 0.1, "identity_management": 0.1}),
    "Persona 5": (0.245, {"data_analytics": 0.3, "ml_training": 0.2, "database_admin": 0.2,
                          "storage_management": 0.15, "streaming_pipelines": 0.15}),
    "Persona 6": (0.015, {"serverless_dev": 0.35, "container_ops": 0.35, "generative_ai": 0.2,
                          "explore_new_services": 0.1}),
    "Persona 7": (0.01, {"batch_processing": 0.4, "generative_ai": 0.2, "database_admin": 0.2,
                         "explore_new_services": 0.2}),
}

# persona -> weights over Low, Medium, High, Very High
PERSONA_TIERS: dict[str, tuple[float, float, float, float]] = {
    "Persona 1": (0.2, 0.4, 0.3, 0.1),
    "Persona 2": (0.1, 0.4, 0.35, 0.15),
    "Persona 3": (0.35, 0.4, 0.2, 0.05),
    "Persona 4": (0.1, 0.4, 0.35, 0.15),
    "Persona 5": (0.05, 0.25, 0.4, 0.3),
    "Persona 6": (0.5, 0.3, 0.15, 0.05),
    "Persona 7": (0.3, 0.4, 0.2, 0.1),
}

PLACES: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    ("United States", 0.3, ("New York", "Seattle", "Austin", "Chicago")),
    ("India", 0.12, ("Bangalore", "Mumbai", "Hyderabad")),
    ("Germany", 0.09, ("Berlin", "Munich", "Frankfurt")),
    ("United Kingdom", 0.08, ("London", "Manchester")),
    ("Japan", 0.07, ("Tokyo", "Osaka")),
    ("Brazil", 0.07, ("Sao Paulo", "Rio de Janeiro")),
    ("France", 0.06, ("Paris", "Lyon")),
    ("Canada", 0.06, ("Toronto", "Vancouver")),
    ("Australia", 0.05, ("Sydney", "Melbourne")),
    ("Singapore", 0.04, ("Singapore",)),
    ("South Africa", 0.03, ("Cape Town", "Johannesburg")),
    ("Netherlands", 0.03, ("Amsterdam",)),
)

# relative daily price of a service, for billing records
EXPENSIVE = {"compute": 5.0, "data_warehouse": 6.0, "ml_studio": 5.0, "relational_db": 4.0, "kubernetes": 4.0,
             "containers": 3.0, "object_storage": 2.0, "streaming": 3.0, "cdn": 2.5, "search_service": 3.0,
             "ai_assistant": 3.5, "nosql_db": 2.0, "cache": 2.0, "batch": 2.5}
FREE = {"console", "catalog", "billing", "cost_explorer", "budgets", "support", "health", "iam", "organizations",
        "marketplace", "cloud_shell", "compliance"}
