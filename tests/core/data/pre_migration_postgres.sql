
CREATE TYPE public.agentrole AS ENUM (
    'GENERALIST',
    'PLANNER',
    'EXECUTOR',
    'RESEARCHER',
    'ANALYST',
    'WRITER',
    'SPECIALIST',
    'CRITIC',
    'REVIEWER',
    'CHECKER',
    'VALIDATOR',
    'SYNTHESIZER',
    'PROPONENT',
    'OPPONENT',
    'MEDIATOR',
    'JUDGE',
    'COMMANDER',
    'LIEUTENANT',
    'WORKER',
    'ROUTER'
);

CREATE TYPE public.executionstatus AS ENUM (
    'PENDING',
    'RUNNING',
    'PAUSED',
    'COMPLETED',
    'FAILED',
    'CANCELLED',
    'INTERRUPTED'
);

CREATE TYPE public.stepstatus AS ENUM (
    'COMPLETED',
    'FAILED'
);

CREATE TYPE public.topologytype AS ENUM (
    'PIPELINE',
    'ENSEMBLE',
    'DEBATE',
    'CROSSCHECK',
    'CHAIN_OF_COMMAND',
    'DELEGATION',
    'COMPOUND'
);

CREATE TABLE public.agent_memories (
    id integer NOT NULL,
    agent_name character varying(64) NOT NULL,
    content character varying NOT NULL,
    tags json NOT NULL,
    importance double precision NOT NULL,
    created_at timestamp with time zone NOT NULL,
    last_accessed_at timestamp with time zone NOT NULL,
    access_count integer NOT NULL
);

CREATE SEQUENCE public.agent_memories_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.agent_memories_id_seq OWNED BY public.agent_memories.id;

CREATE TABLE public.agent_types (
    id integer NOT NULL,
    name character varying(64) NOT NULL,
    description character varying(10000) NOT NULL,
    role public.agentrole NOT NULL,
    config json NOT NULL,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL
);

CREATE SEQUENCE public.agent_types_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.agent_types_id_seq OWNED BY public.agent_types.id;

CREATE TABLE public.execution_steps (
    id integer NOT NULL,
    execution_id uuid NOT NULL,
    key character varying(1000) NOT NULL,
    slot character varying(64) NOT NULL,
    agent_name character varying(64) NOT NULL,
    model character varying(300) NOT NULL,
    status public.stepstatus NOT NULL,
    request json NOT NULL,
    response character varying,
    output json,
    input_tokens integer NOT NULL,
    output_tokens integer NOT NULL,
    cost_usd double precision NOT NULL,
    latency_ms double precision NOT NULL,
    attempts integer NOT NULL,
    error character varying,
    started_at timestamp with time zone NOT NULL,
    completed_at timestamp with time zone
);

CREATE SEQUENCE public.execution_steps_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.execution_steps_id_seq OWNED BY public.execution_steps.id;

CREATE TABLE public.executions (
    id uuid NOT NULL,
    topology_id integer,
    topology_name character varying(64) NOT NULL,
    topology_type character varying(32) NOT NULL,
    status public.executionstatus NOT NULL,
    runner_type character varying(64) NOT NULL,
    origin character varying(32) NOT NULL,
    correlation_id character varying(200),
    input_data json NOT NULL,
    output_data json,
    error character varying,
    topology_snapshot json NOT NULL,
    agents_snapshot json NOT NULL,
    teams_snapshot json NOT NULL,
    run_config json NOT NULL,
    runner_options json NOT NULL,
    external_run_id character varying(300),
    owner_token character varying(100),
    owner_host character varying(255),
    owner_pid integer,
    owner_pid_start integer,
    lease_until timestamp with time zone,
    heartbeat_at timestamp with time zone,
    cancel_requested_at timestamp with time zone,
    history json NOT NULL,
    input_tokens integer NOT NULL,
    output_tokens integer NOT NULL,
    cost_usd double precision NOT NULL,
    attempts integer NOT NULL,
    created_at timestamp with time zone NOT NULL,
    started_at timestamp with time zone NOT NULL,
    completed_at timestamp with time zone,
    duration_ms integer
);

CREATE TABLE public.human_requests (
    id character varying(300) NOT NULL,
    request_type character varying(32) NOT NULL,
    prompt character varying NOT NULL,
    options json,
    context json NOT NULL,
    timeout_seconds double precision,
    status character varying(32) NOT NULL,
    correlation_id character varying(200),
    execution_id uuid,
    key character varying(1000),
    created_at timestamp with time zone NOT NULL,
    expires_at timestamp with time zone
);

CREATE TABLE public.human_responses (
    id character varying(64) NOT NULL,
    request_id character varying(300) NOT NULL,
    response character varying NOT NULL,
    responded_by character varying(200),
    response_metadata json NOT NULL,
    created_at timestamp with time zone NOT NULL
);

CREATE TABLE public.tool_invocations (
    id character varying(64) NOT NULL,
    tool_name character varying(200) NOT NULL,
    input_params json NOT NULL,
    result json,
    error character varying,
    status character varying(32) NOT NULL,
    duration_ms integer,
    created_at timestamp with time zone NOT NULL,
    completed_at timestamp with time zone,
    correlation_id character varying(200)
);

CREATE TABLE public.topologies (
    id integer NOT NULL,
    name character varying(64) NOT NULL,
    description character varying(10000) NOT NULL,
    topology_type public.topologytype NOT NULL,
    config json NOT NULL,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL
);

CREATE SEQUENCE public.topologies_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.topologies_id_seq OWNED BY public.topologies.id;

CREATE TABLE public.topology_memberships (
    id integer NOT NULL,
    topology_id integer NOT NULL,
    agent_id integer NOT NULL,
    slot_name character varying(64) NOT NULL,
    "position" integer NOT NULL
);

CREATE SEQUENCE public.topology_memberships_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.topology_memberships_id_seq OWNED BY public.topology_memberships.id;

CREATE TABLE public.trust_records (
    id integer NOT NULL,
    agent_name character varying(64) NOT NULL,
    sha256 character varying(64) NOT NULL,
    items json NOT NULL,
    trusted_by character varying(200) NOT NULL,
    via character varying(100) NOT NULL,
    trusted_at timestamp with time zone NOT NULL
);

CREATE SEQUENCE public.trust_records_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.trust_records_id_seq OWNED BY public.trust_records.id;

ALTER TABLE ONLY public.agent_memories ALTER COLUMN id SET DEFAULT nextval('public.agent_memories_id_seq'::regclass);

ALTER TABLE ONLY public.agent_types ALTER COLUMN id SET DEFAULT nextval('public.agent_types_id_seq'::regclass);

ALTER TABLE ONLY public.execution_steps ALTER COLUMN id SET DEFAULT nextval('public.execution_steps_id_seq'::regclass);

ALTER TABLE ONLY public.topologies ALTER COLUMN id SET DEFAULT nextval('public.topologies_id_seq'::regclass);

ALTER TABLE ONLY public.topology_memberships ALTER COLUMN id SET DEFAULT nextval('public.topology_memberships_id_seq'::regclass);

ALTER TABLE ONLY public.trust_records ALTER COLUMN id SET DEFAULT nextval('public.trust_records_id_seq'::regclass);

INSERT INTO public.agent_memories (id, agent_name, content, tags, importance, created_at, last_accessed_at, access_count) VALUES (1, 'planner', 'launch on a Tuesday', '["launch"]', 0.8, '2026-12-01 13:53:18.171041+00', '2026-12-01 13:53:18.171041+00', 0);

INSERT INTO public.agent_types (id, name, description, role, config, created_at, updated_at) VALUES (1, 'planner', '', 'PLANNER', '{"model":"test","model_config_obj":null,"temperature":null,"max_tokens":null,"system_prompt":null,"output_format":"text","output_schema":null,"max_retries":3,"timeout_seconds":300.0,"max_tool_calls":10,"capabilities":[],"mixins":{},"max_total_tokens":null,"max_cost_usd":null,"base_url":null,"api_key_env":null}', '2026-12-01 13:53:15.622816+00', '2026-12-01 13:53:15.622836+00');
INSERT INTO public.agent_types (id, name, description, role, config, created_at, updated_at) VALUES (2, 'writer', '', 'WRITER', '{"model":"test","model_config_obj":null,"temperature":null,"max_tokens":null,"system_prompt":null,"output_format":"text","output_schema":null,"max_retries":3,"timeout_seconds":300.0,"max_tool_calls":10,"capabilities":[],"mixins":{},"max_total_tokens":null,"max_cost_usd":null,"base_url":null,"api_key_env":null}', '2026-12-01 13:53:15.622974+00', '2026-12-01 13:53:15.622984+00');

INSERT INTO public.execution_steps (id, execution_id, key, slot, agent_name, model, status, request, response, output, input_tokens, output_tokens, cost_usd, latency_ms, attempts, error, started_at, completed_at) VALUES (1, '6281494b-86ae-4e59-a900-a990aa7ffb44', 'pipeline/0:plan', 'plan', 'planner', 'test', 'COMPLETED', '{"system":"You are planner, a planner agent in a team of AI agents.","messages":[{"role":"user","content":"Task: Plan a launch\n\nYou are stage 1 of 2 (plan). Do your part of the work and reply with your result."}],"settings":{}}', 'Plan: Plan a launch [8fe284f4]
Confidence: 0.72', 'null', 86, 8, 0, 21.811623000019154, 1, NULL, '2026-12-01 13:53:18.042413+00', '2026-12-01 13:53:18.065899+00');
INSERT INTO public.execution_steps (id, execution_id, key, slot, agent_name, model, status, request, response, output, input_tokens, output_tokens, cost_usd, latency_ms, attempts, error, started_at, completed_at) VALUES (2, '6281494b-86ae-4e59-a900-a990aa7ffb44', 'pipeline/1:write', 'write', 'writer', 'test', 'COMPLETED', '{"system":"You are writer, a writer agent in a team of AI agents.","messages":[{"role":"user","content":"Task: Plan a launch\n\nOutput of the previous stage (plan):\nPlan: Plan a launch [8fe284f4]\nConfidence: 0.72\n\nYou are stage 2 of 2 (write). Do your part of the work and reply with your result."}],"settings":{}}', 'Draft: Plan a launch [116ad719]
Confidence: 0.72', 'null', 100, 8, 0, 6.278974999986531, 1, NULL, '2026-12-01 13:53:18.127374+00', '2026-12-01 13:53:18.133827+00');

INSERT INTO public.executions (id, topology_id, topology_name, topology_type, status, runner_type, origin, correlation_id, input_data, output_data, error, topology_snapshot, agents_snapshot, teams_snapshot, run_config, runner_options, external_run_id, owner_token, owner_host, owner_pid, owner_pid_start, lease_until, heartbeat_at, cancel_requested_at, history, input_tokens, output_tokens, cost_usd, attempts, created_at, started_at, completed_at, duration_ms) VALUES ('6281494b-86ae-4e59-a900-a990aa7ffb44', 1, 'review', 'pipeline', 'COMPLETED', 'local', 'python', 'efcfc12788244d8db9d7423b9f618054', '{"prompt":"Plan a launch"}', '{"output":"Draft: Plan a launch [116ad719]\nConfidence: 0.72","final_stage":"write","stages":[{"stage":"plan","agent":"planner","output":"Plan: Plan a launch [8fe284f4]\nConfidence: 0.72"},{"stage":"write","agent":"writer","output":"Draft: Plan a launch [116ad719]\nConfidence: 0.72"}]}', NULL, '{"name":"review","description":"","topology_type":"pipeline","config":{"stages":[],"pass_original_input":true,"retry_failed_stages":false,"max_stage_retries":1,"checkpoint_after":[]}}', '{"plan":{"name":"planner","description":"","role":"planner","config":{"model":"test","model_config_obj":null,"temperature":null,"max_tokens":null,"system_prompt":null,"output_format":"text","output_schema":null,"max_retries":3,"timeout_seconds":300.0,"max_tool_calls":10,"capabilities":[],"mixins":{},"max_total_tokens":null,"max_cost_usd":null,"base_url":null,"api_key_env":null}},"write":{"name":"writer","description":"","role":"writer","config":{"model":"test","model_config_obj":null,"temperature":null,"max_tokens":null,"system_prompt":null,"output_format":"text","output_schema":null,"max_retries":3,"timeout_seconds":300.0,"max_tool_calls":10,"capabilities":[],"mixins":{},"max_total_tokens":null,"max_cost_usd":null,"base_url":null,"api_key_env":null}}}', '{}', '{"correlation_id":"efcfc12788244d8db9d7423b9f618054","timeout_seconds":3600,"checkpoint_enabled":true,"retry_on_failure":true,"max_retries":3,"model_override":"test","max_concurrent":null,"retry_backoff_seconds":0.5,"max_tokens":null,"max_cost_usd":null}', '{}', NULL, NULL, NULL, NULL, NULL, NULL, '2026-12-01 13:53:18.018669+00', NULL, '[{"attempt":1,"at":"2026-12-01T13:53:18.018669+00:00","by":"pid 17006 on vm","runner":"local","runner_options":{}}]', 186, 16, 0, 1, '2026-12-01 13:53:18.018669+00', '2026-12-01 13:53:18.018669+00', '2026-12-01 13:53:18.143955+00', 125);

INSERT INTO public.human_requests (id, request_type, prompt, options, context, timeout_seconds, status, correlation_id, execution_id, key, created_at, expires_at) VALUES ('req-1', 'approval', 'Approve?', '["approve","reject"]', '{}', NULL, 'responded', NULL, '6281494b-86ae-4e59-a900-a990aa7ffb44', 'gate/0', '2026-12-01 13:53:18.226025+00', NULL);

INSERT INTO public.human_responses (id, request_id, response, responded_by, response_metadata, created_at) VALUES ('bed7a634-cd17-4082-8304-f3a04d94a356', 'req-1', 'approve', 'ci', '{}', '2026-12-01 13:53:18.265522+00');

INSERT INTO public.tool_invocations (id, tool_name, input_params, result, error, status, duration_ms, created_at, completed_at, correlation_id) VALUES ('inv-1', 'planner', '{"task":"x"}', '{"plan":"y"}', NULL, 'success', 5, '2026-12-01 13:53:18.303646+00', NULL, NULL);

INSERT INTO public.topologies (id, name, description, topology_type, config, created_at, updated_at) VALUES (1, 'review', '', 'PIPELINE', '{"stages":[],"pass_original_input":true,"retry_failed_stages":false,"max_stage_retries":1,"checkpoint_after":[]}', '2026-12-01 13:53:15.642928+00', '2026-12-01 13:53:15.642953+00');

INSERT INTO public.topology_memberships (id, topology_id, agent_id, slot_name, "position") VALUES (1, 1, 1, 'plan', 0);
INSERT INTO public.topology_memberships (id, topology_id, agent_id, slot_name, "position") VALUES (2, 1, 2, 'write', 1);

INSERT INTO public.trust_records (id, agent_name, sha256, items, trusted_by, via, trusted_at) VALUES (1, 'planner', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', '["tool x"]', 'ci', 'qmcp trust', '2026-12-01 13:53:18.201798+00');

SELECT pg_catalog.setval('public.agent_memories_id_seq', 1, true);

SELECT pg_catalog.setval('public.agent_types_id_seq', 2, true);

SELECT pg_catalog.setval('public.execution_steps_id_seq', 2, true);

SELECT pg_catalog.setval('public.topologies_id_seq', 1, true);

SELECT pg_catalog.setval('public.topology_memberships_id_seq', 2, true);

SELECT pg_catalog.setval('public.trust_records_id_seq', 1, true);

ALTER TABLE ONLY public.agent_memories
    ADD CONSTRAINT agent_memories_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.agent_types
    ADD CONSTRAINT agent_types_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.execution_steps
    ADD CONSTRAINT execution_steps_execution_id_key_key UNIQUE (execution_id, key);

ALTER TABLE ONLY public.execution_steps
    ADD CONSTRAINT execution_steps_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.executions
    ADD CONSTRAINT executions_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.human_requests
    ADD CONSTRAINT human_requests_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.human_responses
    ADD CONSTRAINT human_responses_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.human_responses
    ADD CONSTRAINT human_responses_request_id_key UNIQUE (request_id);

ALTER TABLE ONLY public.tool_invocations
    ADD CONSTRAINT tool_invocations_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.topologies
    ADD CONSTRAINT topologies_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.topology_memberships
    ADD CONSTRAINT topology_memberships_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.topology_memberships
    ADD CONSTRAINT topology_memberships_topology_id_slot_name_key UNIQUE (topology_id, slot_name);

ALTER TABLE ONLY public.trust_records
    ADD CONSTRAINT trust_records_agent_name_sha256_key UNIQUE (agent_name, sha256);

ALTER TABLE ONLY public.trust_records
    ADD CONSTRAINT trust_records_pkey PRIMARY KEY (id);

CREATE INDEX ix_agent_memories_agent_name ON public.agent_memories USING btree (agent_name);

CREATE UNIQUE INDEX ix_agent_types_name ON public.agent_types USING btree (name);

CREATE INDEX ix_executions_correlation_id ON public.executions USING btree (correlation_id);

CREATE INDEX ix_executions_origin ON public.executions USING btree (origin);

CREATE INDEX ix_executions_status ON public.executions USING btree (status);

CREATE INDEX ix_executions_topology_id ON public.executions USING btree (topology_id);

CREATE INDEX ix_executions_topology_name ON public.executions USING btree (topology_name);

CREATE INDEX ix_human_requests_correlation_id ON public.human_requests USING btree (correlation_id);

CREATE INDEX ix_human_requests_created_at ON public.human_requests USING btree (created_at);

CREATE INDEX ix_human_requests_execution_id ON public.human_requests USING btree (execution_id);

CREATE INDEX ix_human_requests_request_type ON public.human_requests USING btree (request_type);

CREATE INDEX ix_human_requests_status ON public.human_requests USING btree (status);

CREATE INDEX ix_human_responses_created_at ON public.human_responses USING btree (created_at);

CREATE INDEX ix_tool_invocations_correlation_id ON public.tool_invocations USING btree (correlation_id);

CREATE INDEX ix_tool_invocations_created_at ON public.tool_invocations USING btree (created_at);

CREATE INDEX ix_tool_invocations_status ON public.tool_invocations USING btree (status);

CREATE INDEX ix_tool_invocations_tool_name ON public.tool_invocations USING btree (tool_name);

CREATE UNIQUE INDEX ix_topologies_name ON public.topologies USING btree (name);

CREATE INDEX ix_topology_memberships_agent_id ON public.topology_memberships USING btree (agent_id);

CREATE INDEX ix_topology_memberships_topology_id ON public.topology_memberships USING btree (topology_id);

CREATE INDEX ix_trust_records_agent_name ON public.trust_records USING btree (agent_name);

ALTER TABLE ONLY public.execution_steps
    ADD CONSTRAINT execution_steps_execution_id_fkey FOREIGN KEY (execution_id) REFERENCES public.executions(id);

ALTER TABLE ONLY public.executions
    ADD CONSTRAINT executions_topology_id_fkey FOREIGN KEY (topology_id) REFERENCES public.topologies(id);

ALTER TABLE ONLY public.human_requests
    ADD CONSTRAINT human_requests_execution_id_fkey FOREIGN KEY (execution_id) REFERENCES public.executions(id);

ALTER TABLE ONLY public.human_responses
    ADD CONSTRAINT human_responses_request_id_fkey FOREIGN KEY (request_id) REFERENCES public.human_requests(id);

ALTER TABLE ONLY public.topology_memberships
    ADD CONSTRAINT topology_memberships_agent_id_fkey FOREIGN KEY (agent_id) REFERENCES public.agent_types(id);

ALTER TABLE ONLY public.topology_memberships
    ADD CONSTRAINT topology_memberships_topology_id_fkey FOREIGN KEY (topology_id) REFERENCES public.topologies(id);

