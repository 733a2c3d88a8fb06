// For type-checking hookcast.js only: it also loads under node for its tests.
declare var module: { exports: unknown } | undefined;
