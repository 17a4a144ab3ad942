"use strict";
// A local dependency of the sample project, installed by `npm ci` from the project itself.
exports.greet = (name) => `Hello, ${name}!`;
