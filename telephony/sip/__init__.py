"""BYO SIP trunks, the whole provider: the web side's client (provider), the typed control
protocol and channel, and the agent process (agent, engine, media bridge, supervisor).

Web workers import only `provider`, `protocol`, `control` and `numbers`; the SIP stack
(pjsua2) is loaded by `engine` alone, which only the agent process imports."""
