"""Where the monitor's records come from: the local gateway's hand-overs (`local`), Seldon's Kafka
topics (`kafka`) and KServe's CloudEvents (`kserve`). Each reads its transport into readings and
makes records of them with `income_bundle.monitoring.records`; each module is imported on its own."""
