// netlify-plugin-hookcast: onPostBuild stamps constants.PUBLISH_DIR through
// @hookcast/stamp (the same code as the CLI), with the deploy id Netlify sets in
// the build's environment (DEPLOY_ID). A server that cannot be reached fails
// the build through utils.build.failBuild, and no page is stamped.
//
//   npm install --save-dev netlify-plugin-hookcast
//   # netlify.toml
//   [[plugins]]
//   package = "netlify-plugin-hookcast"
//   [plugins.inputs]
//   url = "https://hooks.example.com"
'use strict';
module.exports = {
  async onPostBuild({ constants, inputs, utils }) {
    const { stamp } = await import('@hookcast/stamp');
    try {
      await stamp({
        url: inputs.url || process.env.HOOKCAST_URL,
        dir: constants.PUBLISH_DIR,
        token: inputs.token || process.env.HOOKCAST_TOKEN,
        deployId: process.env.DEPLOY_ID,
        log: (m) => console.log(m),
      });
    } catch (error) {
      utils.build.failBuild(error.message, { error });
    }
  },
};
