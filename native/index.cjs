// Loads the compiled addon; stackbd falls back to plain node:fs when this throws.
module.exports = require('./build/Release/stackbd_native.node');
