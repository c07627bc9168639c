% rebase('base.tpl')
<h1>Runs</h1>
<form class="filters" method="get" action="/runs" data-testid="run-filter" role="search">
  <label class="grow">Job
    <input type="text" name="job_id" value="{{filters['job_id']}}" list="job-ids" placeholder="any job" class="mono">
    <datalist id="job-ids">
      % for job_id in job_ids:
      <option value="{{job_id}}"></option>
      % end
    </datalist>
  </label>
  <label>Status
    <select name="status">
      <option value="">any</option>
      % for name in h['run_statuses']:
      <option value="{{name}}" {{'selected' if filters['status'] == name else ''}}>{{name}}</option>
      % end
    </select>
  </label>
  <div class="filter-buttons">
    <button type="submit" class="btn">Filter</button>
    <a class="btn btn-quiet" href="/runs">Clear</a>
  </div>
</form>
<section class="panel">
% include('_runs_table.tpl')
</section>
