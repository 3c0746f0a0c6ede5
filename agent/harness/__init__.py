"""The harness that `binkeeper demo`, the benchmarks and the tests share: a throwaway
mariadbd (`local_mariadb`), an OLTP workload (`workload`), a synthetic load and the agent
that runs it (`synthetic`), a failover group on this machine (`group`, its agents as OS
processes from `agent_process`), a writer that follows the primary (`writer`), the verdict
on what it was told (`verdict`), and the demo itself (`demo`). Nothing in the agent's run
path imports it; of the product's commands only `binkeeper demo` does (checked)."""
