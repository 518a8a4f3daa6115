PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE agent_types (
	id INTEGER NOT NULL, 
	name VARCHAR(64) NOT NULL, 
	description VARCHAR(10000) NOT NULL, 
	role VARCHAR(11) NOT NULL, 
	config JSON NOT NULL, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO agent_types VALUES(1,'planner','','PLANNER','{"model":"test","model_config_obj":null,"temperature":null,"max_tokens":null,"system_prompt":null,"output_format":"text","output_schema":null,"max_retries":3,"timeout_seconds":300.0,"max_tool_calls":10,"capabilities":[],"mixins":{},"max_total_tokens":null,"max_cost_usd":null,"base_url":null,"api_key_env":null}','2026-12-01 13:53:06.295441','2026-12-01 13:53:06.295464');
INSERT INTO agent_types VALUES(2,'writer','','WRITER','{"model":"test","model_config_obj":null,"temperature":null,"max_tokens":null,"system_prompt":null,"output_format":"text","output_schema":null,"max_retries":3,"timeout_seconds":300.0,"max_tool_calls":10,"capabilities":[],"mixins":{},"max_total_tokens":null,"max_cost_usd":null,"base_url":null,"api_key_env":null}','2026-12-01 13:53:06.295643','2026-12-01 13:53:06.295656');
CREATE TABLE agent_memories (
	id INTEGER NOT NULL, 
	agent_name VARCHAR(64) NOT NULL, 
	content VARCHAR NOT NULL, 
	tags JSON NOT NULL, 
	importance FLOAT NOT NULL, 
	created_at DATETIME NOT NULL, 
	last_accessed_at DATETIME NOT NULL, 
	access_count INTEGER NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO agent_memories VALUES(1,'planner','launch on a Tuesday','["launch"]',0.8000000000000000444,'2026-12-01 13:53:08.837516','2026-12-01 13:53:08.837516',0);
CREATE TABLE tool_invocations (
	id VARCHAR(64) NOT NULL, 
	tool_name VARCHAR(200) NOT NULL, 
	input_params JSON NOT NULL, 
	result JSON, 
	error VARCHAR, 
	status VARCHAR(32) NOT NULL, 
	duration_ms INTEGER, 
	created_at DATETIME NOT NULL, 
	completed_at DATETIME, 
	correlation_id VARCHAR(200), 
	PRIMARY KEY (id)
);
INSERT INTO tool_invocations VALUES('inv-1','planner','{"task":"x"}','{"plan":"y"}',NULL,'success',5,'2026-12-01 13:53:08.939268',NULL,NULL);
CREATE TABLE topologies (
	id INTEGER NOT NULL, 
	name VARCHAR(64) NOT NULL, 
	description VARCHAR(10000) NOT NULL, 
	topology_type VARCHAR(16) NOT NULL, 
	config JSON NOT NULL, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO topologies VALUES(1,'review','','PIPELINE','{"stages":[],"pass_original_input":true,"retry_failed_stages":false,"max_stage_retries":1,"checkpoint_after":[]}','2026-12-01 13:53:06.300387','2026-12-01 13:53:06.300408');
CREATE TABLE trust_records (
	id INTEGER NOT NULL, 
	agent_name VARCHAR(64) NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	items JSON NOT NULL, 
	trusted_by VARCHAR(200) NOT NULL, 
	via VARCHAR(100) NOT NULL, 
	trusted_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (agent_name, sha256)
);
INSERT INTO trust_records VALUES(1,'planner','aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','["tool x"]','ci','qmcp trust','2026-12-01 13:53:08.871307');
CREATE TABLE executions (
	id CHAR(32) NOT NULL, 
	topology_id INTEGER, 
	topology_name VARCHAR(64) NOT NULL, 
	topology_type VARCHAR(32) NOT NULL, 
	status VARCHAR(11) NOT NULL, 
	runner_type VARCHAR(64) NOT NULL, 
	origin VARCHAR(32) NOT NULL, 
	correlation_id VARCHAR(200), 
	input_data JSON NOT NULL, 
	output_data JSON, 
	error VARCHAR, 
	topology_snapshot JSON NOT NULL, 
	agents_snapshot JSON NOT NULL, 
	teams_snapshot JSON NOT NULL, 
	run_config JSON NOT NULL, 
	runner_options JSON NOT NULL, 
	external_run_id VARCHAR(300), 
	owner_token VARCHAR(100), 
	owner_host VARCHAR(255), 
	owner_pid INTEGER, 
	owner_pid_start INTEGER, 
	lease_until DATETIME, 
	heartbeat_at DATETIME, 
	cancel_requested_at DATETIME, 
	history JSON NOT NULL, 
	input_tokens INTEGER NOT NULL, 
	output_tokens INTEGER NOT NULL, 
	cost_usd FLOAT NOT NULL, 
	attempts INTEGER NOT NULL, 
	created_at DATETIME NOT NULL, 
	started_at DATETIME NOT NULL, 
	completed_at DATETIME, 
	duration_ms INTEGER, 
	PRIMARY KEY (id), 
	FOREIGN KEY(topology_id) REFERENCES topologies (id)
);
INSERT INTO executions VALUES('53365cb4d8e74ad2be5f680e53c0d0ed',1,'review','pipeline','COMPLETED','local','python','89536f4ddc944581b0721e59a4ec4101','{"prompt":"Plan a launch"}','{"output":"Draft: Plan a launch [116ad719]\nConfidence: 0.72","final_stage":"write","stages":[{"stage":"plan","agent":"planner","output":"Plan: Plan a launch [8fe284f4]\nConfidence: 0.72"},{"stage":"write","agent":"writer","output":"Draft: Plan a launch [116ad719]\nConfidence: 0.72"}]}',NULL,'{"name":"review","description":"","topology_type":"pipeline","config":{"stages":[],"pass_original_input":true,"retry_failed_stages":false,"max_stage_retries":1,"checkpoint_after":[]}}','{"plan":{"name":"planner","description":"","role":"planner","config":{"model":"test","model_config_obj":null,"temperature":null,"max_tokens":null,"system_prompt":null,"output_format":"text","output_schema":null,"max_retries":3,"timeout_seconds":300.0,"max_tool_calls":10,"capabilities":[],"mixins":{},"max_total_tokens":null,"max_cost_usd":null,"base_url":null,"api_key_env":null}},"write":{"name":"writer","description":"","role":"writer","config":{"model":"test","model_config_obj":null,"temperature":null,"max_tokens":null,"system_prompt":null,"output_format":"text","output_schema":null,"max_retries":3,"timeout_seconds":300.0,"max_tool_calls":10,"capabilities":[],"mixins":{},"max_total_tokens":null,"max_cost_usd":null,"base_url":null,"api_key_env":null}}}','{}','{"correlation_id":"89536f4ddc944581b0721e59a4ec4101","timeout_seconds":3600,"checkpoint_enabled":true,"retry_on_failure":true,"max_retries":3,"model_override":"test","max_concurrent":null,"retry_backoff_seconds":0.5,"max_tokens":null,"max_cost_usd":null}','{}',NULL,NULL,NULL,NULL,NULL,NULL,'2026-12-01 13:53:08.708317',NULL,'[{"attempt":1,"at":"2026-12-01T13:53:08.708317+00:00","by":"pid 16781 on vm","runner":"local","runner_options":{}}]',186,16,0.0,1,'2026-12-01 13:53:08.708317','2026-12-01 13:53:08.708317','2026-12-01 13:53:08.810233',101);
CREATE TABLE topology_memberships (
	id INTEGER NOT NULL, 
	topology_id INTEGER NOT NULL, 
	agent_id INTEGER NOT NULL, 
	slot_name VARCHAR(64) NOT NULL, 
	position INTEGER NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (topology_id, slot_name), 
	FOREIGN KEY(topology_id) REFERENCES topologies (id), 
	FOREIGN KEY(agent_id) REFERENCES agent_types (id)
);
INSERT INTO topology_memberships VALUES(1,1,1,'plan',0);
INSERT INTO topology_memberships VALUES(2,1,2,'write',1);
CREATE TABLE execution_steps (
	id INTEGER NOT NULL, 
	execution_id CHAR(32) NOT NULL, 
	"key" VARCHAR(1000) NOT NULL, 
	slot VARCHAR(64) NOT NULL, 
	agent_name VARCHAR(64) NOT NULL, 
	model VARCHAR(300) NOT NULL, 
	status VARCHAR(9) NOT NULL, 
	request JSON NOT NULL, 
	response VARCHAR, 
	output JSON, 
	input_tokens INTEGER NOT NULL, 
	output_tokens INTEGER NOT NULL, 
	cost_usd FLOAT NOT NULL, 
	latency_ms FLOAT NOT NULL, 
	attempts INTEGER NOT NULL, 
	error VARCHAR, 
	started_at DATETIME NOT NULL, 
	completed_at DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE (execution_id, "key"), 
	FOREIGN KEY(execution_id) REFERENCES executions (id)
);
INSERT INTO execution_steps VALUES(1,'53365cb4d8e74ad2be5f680e53c0d0ed','pipeline/0:plan','plan','planner','test','COMPLETED','{"system":"You are planner, a planner agent in a team of AI agents.","messages":[{"role":"user","content":"Task: Plan a launch\n\nYou are stage 1 of 2 (plan). Do your part of the work and reply with your result."}],"settings":{}}',replace('Plan: Plan a launch [8fe284f4]\nConfidence: 0.72','\n',char(10)),'null',86,8,0.0,51.125914000010652671,1,NULL,'2026-12-01 13:53:08.732671+00:00','2026-12-01 13:53:08.793883+00:00');
INSERT INTO execution_steps VALUES(2,'53365cb4d8e74ad2be5f680e53c0d0ed','pipeline/1:write','write','writer','test','COMPLETED','{"system":"You are writer, a writer agent in a team of AI agents.","messages":[{"role":"user","content":"Task: Plan a launch\n\nOutput of the previous stage (plan):\nPlan: Plan a launch [8fe284f4]\nConfidence: 0.72\n\nYou are stage 2 of 2 (write). Do your part of the work and reply with your result."}],"settings":{}}',replace('Draft: Plan a launch [116ad719]\nConfidence: 0.72','\n',char(10)),'null',100,8,0.0,14.500515000008817878,1,NULL,'2026-12-01 13:53:08.795048+00:00','2026-12-01 13:53:08.809667+00:00');
CREATE TABLE human_requests (
	id VARCHAR(300) NOT NULL, 
	request_type VARCHAR(32) NOT NULL, 
	prompt VARCHAR NOT NULL, 
	options JSON, 
	context JSON NOT NULL, 
	timeout_seconds FLOAT, 
	status VARCHAR(32) NOT NULL, 
	correlation_id VARCHAR(200), 
	execution_id CHAR(32), 
	"key" VARCHAR(1000), 
	created_at DATETIME NOT NULL, 
	expires_at DATETIME, 
	PRIMARY KEY (id), 
	FOREIGN KEY(execution_id) REFERENCES executions (id)
);
INSERT INTO human_requests VALUES('req-1','approval','Approve?','["approve","reject"]','{}',NULL,'responded',NULL,'53365cb4d8e74ad2be5f680e53c0d0ed','gate/0','2026-12-01 13:53:08.881994',NULL);
CREATE TABLE human_responses (
	id VARCHAR(64) NOT NULL, 
	request_id VARCHAR(300) NOT NULL, 
	response VARCHAR NOT NULL, 
	responded_by VARCHAR(200), 
	response_metadata JSON NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (request_id), 
	FOREIGN KEY(request_id) REFERENCES human_requests (id)
);
INSERT INTO human_responses VALUES('bb38656f-2950-45eb-b240-6fe548e21c69','req-1','approve','ci','{}','2026-12-01 13:53:08.921149');
CREATE UNIQUE INDEX ix_agent_types_name ON agent_types (name);
CREATE INDEX ix_agent_memories_agent_name ON agent_memories (agent_name);
CREATE INDEX ix_tool_invocations_tool_name ON tool_invocations (tool_name);
CREATE INDEX ix_tool_invocations_status ON tool_invocations (status);
CREATE INDEX ix_tool_invocations_created_at ON tool_invocations (created_at);
CREATE INDEX ix_tool_invocations_correlation_id ON tool_invocations (correlation_id);
CREATE UNIQUE INDEX ix_topologies_name ON topologies (name);
CREATE INDEX ix_trust_records_agent_name ON trust_records (agent_name);
CREATE INDEX ix_executions_correlation_id ON executions (correlation_id);
CREATE INDEX ix_executions_topology_name ON executions (topology_name);
CREATE INDEX ix_executions_topology_id ON executions (topology_id);
CREATE INDEX ix_executions_status ON executions (status);
CREATE INDEX ix_executions_origin ON executions (origin);
CREATE INDEX ix_topology_memberships_agent_id ON topology_memberships (agent_id);
CREATE INDEX ix_topology_memberships_topology_id ON topology_memberships (topology_id);
CREATE INDEX ix_human_requests_status ON human_requests (status);
CREATE INDEX ix_human_requests_correlation_id ON human_requests (correlation_id);
CREATE INDEX ix_human_requests_execution_id ON human_requests (execution_id);
CREATE INDEX ix_human_requests_created_at ON human_requests (created_at);
CREATE INDEX ix_human_requests_request_type ON human_requests (request_type);
CREATE INDEX ix_human_responses_created_at ON human_responses (created_at);
COMMIT;
