"""The harness that `binkeeper demo`, the benchmarks and the tests share: a throwaway
mariadbd (`local_mariadb`), an OLTP workload (`workload`), a synthetic load and the agent
that runs it (`synthetic`), and the demo itself (`demo`). Nothing in the agent's run path
imports it; of the product's commands only `binkeeper demo` does (checked)."""
