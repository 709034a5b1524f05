"""The IoT Onboard account service: accounts, registry, claims, households, audit."""
