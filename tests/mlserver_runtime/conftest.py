# sleepy.py runs inside MLServer's environment (it imports mlserver): never collected here
collect_ignore = ["sleepy.py"]
