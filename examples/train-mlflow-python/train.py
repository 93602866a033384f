"""The training of examples/train, written with the MLflow Python client.

Plinth speaks the MLflow REST API, so an unmodified MLflow script logs to it:
this one trains logistic regression on examples/data/transactions.csv with
scikit-learn, logs its parameters, metrics and input data set, saves the
model in MLflow's format and registers it. See README.md beside it for how
to install its packages and run it; the repository's tests do not run it.
"""

import argparse
import os

import mlflow
import mlflow.sklearn
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--data", default=os.path.join(here, "..", "data", "transactions.csv"))
    p.add_argument("--data-uri", default="data:transactions:1",
                   help="the Plinth data version the CSV is, recorded as the data set's source (lineage)")
    p.add_argument("--c", type=float, default=1.0, help="inverse regularisation strength")
    p.add_argument("--register-model", default="fraud")
    args = p.parse_args()

    df = pd.read_csv(args.data)
    x, y = df.drop(columns=["is_fraud"]), df["is_fraud"]
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=1)

    # MLFLOW_TRACKING_URI, MLFLOW_TRACKING_TOKEN and MLFLOW_EXPERIMENT_NAME
    # come from the environment, as for any MLflow server.
    with mlflow.start_run() as run:
        dataset = mlflow.data.from_pandas(df, source=args.data_uri, name="transactions", targets="is_fraud")
        mlflow.log_input(dataset, context="training")
        mlflow.log_params({"C": args.c, "n_train": len(x_train), "n_test": len(x_test)})

        model = make_pipeline(StandardScaler(), LogisticRegression(C=args.c))
        model.fit(x_train, y_train)
        proba = model.predict_proba(x_test)[:, 1]
        mlflow.log_metrics({"test_accuracy": accuracy_score(y_test, proba > 0.5),
                            "test_loss": log_loss(y_test, proba)})

        info = mlflow.sklearn.log_model(model, artifact_path="model", input_example=x_test.head(2),
                                        registered_model_name=args.register_model)
        print(f"run {run.info.run_id}: registered {info.model_uri} as {args.register_model}")


if __name__ == "__main__":
    main()
