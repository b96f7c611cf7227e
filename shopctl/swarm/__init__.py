"""Docker Swarm: the pure mapping from shopctl's specs to swarm service specs (specs),
the registrar that keeps Consul in step with the swarm's tasks (registrar, a
stdlib-only script that runs as a swarm service), and getting images onto the nodes
(nodes). The runtime itself is shopctl.runtime.swarm."""
