"""HTTP front-end pieces on aiohttp: relaying to the upstream and trusted-proxy handling."""
