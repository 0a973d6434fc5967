"""The ClientApp, as in Flower's quickstart: its own optimizer, the lr from the train config."""

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedquick.task import Net, evaluate, load_data, train

torch.set_num_threads(1)
app = ClientApp()


@app.train()
def train_fn(msg: Message, context: Context) -> Message:
    model = Net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x, y = load_data(
        int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    )
    loss = train(
        model, x, y, int(context.run_config["local-epochs"]), float(msg.content["config"]["lr"])
    )
    metrics = MetricRecord({"train_loss": loss, "num-examples": len(x)})
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate_fn(msg: Message, context: Context) -> Message:
    model = Net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x, y = load_data(
        int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    )
    loss, acc = evaluate(model, x, y)
    metrics = MetricRecord({"eval_loss": loss, "eval_acc": acc, "num-examples": len(x)})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
