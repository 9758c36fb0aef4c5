// Notebook 14's service: GET / greets, GET /healthz answers ok, and SIGTERM closes the server and exits 0 (a
// process that gets the signal stops at once; one behind a shell that does not forward it waits for SIGKILL).
import express from "express";

export const GREETING = "hello from the quick check";
const port = Number(process.env.PORT ?? 3000);

const app = express();
app.get("/", (_request, response) => {
  response.json({ greeting: GREETING, uid: process.getuid?.() ?? null });
});
app.get("/healthz", (_request, response) => {
  response.send("ok");
});

const server = app.listen(port, "0.0.0.0", () => {
  console.log(`listening on ${port}`);
});
process.on("SIGTERM", () => {
  server.close(() => process.exit(0));
});
