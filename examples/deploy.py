"""Deploy a retrained architecture: load architecture.json, freeze it, load model.pt, classify images.

    nni-zodarts run --output runs/demo                  # writes runs/demo/{search,retrain}
    python examples/deploy.py runs/demo                 # predicts the first test images of BreastMNIST
    python examples/deploy.py runs/retina ../shared/data/medmnist     # another data set: the folder of its .npz
"""
import sys
from pathlib import Path

import torch
from medmnist import INFO

from nni_zodarts.data import TensorImages, load_medmnist
from nni_zodarts.files import read_json
from nni_zodarts.retrain import build_model

run = Path(sys.argv[1] if len(sys.argv) > 1 else 'runs/demo')
config = read_json(run / 'search' / 'search_config.json')
model = build_model(read_json(run / 'search' / 'architecture.json'), config['space'], config['space_kwargs'])
model.load_state_dict(torch.load(run / 'retrain' / 'model.pt', map_location='cpu', weights_only=True))
model.eval()

data = load_medmnist(config['dataset'], sys.argv[2] if len(sys.argv) > 2 else None, config.get('image_size', 28))
images, labels = data.splits['test']
x, y = TensorImages(images[:8], labels[:8]).__getitems__(list(range(8)))     # the same scaling as in training
with torch.no_grad():
    probs = torch.softmax(model(x), -1)
names = INFO[config['dataset']]['label']
for p, truth in zip(probs, y):
    print(f'predicted {names[str(int(p.argmax()))]!r:>20} ({float(p.max()):.2f}), true {names[str(int(truth))]!r}')
